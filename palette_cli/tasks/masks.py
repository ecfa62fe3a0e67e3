"""The masks' old home: each fill task now owns its masks (tasks/inpaint.py, tasks/uncrop.py) and the
shared helpers live in the pixel layer (images.py). These names stay importable from here until the
last imports of this module are gone."""

from ..images import box_mask, check_mask, masked_view, mean_fill  # noqa: F401
from .inpaint import center_mask, free_form_mask, random_box_mask, train_inpaint_mask  # noqa: F401
from .uncrop import UNCROP_SIDES, train_uncrop_mask, uncrop_mask  # noqa: F401
