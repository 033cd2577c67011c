"""BokehDepth engine: calibration, bokeh stacks and metric depth, without ComfyUI.

Conventions shared by every module of the core:

* Images are torch tensors ``[B, H, W, 3]``, float32 in 0..1 (ComfyUI's IMAGE layout).
* Depth is ``[B, H, W]`` in metres; disparity (inverse depth) is ``[B, H, W]`` in 1/metres.
* ``K`` (the calibrated bokeh strength, the paper's ``dof_cond``) is in pixels x metres, so that
  the blur radius in output pixels is ``K * |disparity - focus_disparity|``.
* Long work reports progress through a plain ``callback(done, total)``; it may raise to abort.
* Nothing here imports ComfyUI, downloads files or loads models at import time.
"""

__version__ = "0.1.0"
