"""ANT in pure PyTorch: modality adaptors, the sequence encoder, losses, training strategies
(pre-train, re-learn, fine-tune, scratch, baselines) and full-ranking evaluation.

Read top-down: dropout → adaptors → items → sequence → model → losses → data → evaluate → train → strategies.
"""

import ant_config  # noqa: E402,F401 - before any torch import: it sets OpenMP's wait policy
