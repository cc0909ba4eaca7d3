"""Build tf.data functions that start without Grappler: cheaper iterators.

Every ``iter(dataset)`` (every epoch) instantiates each function of the
pipeline again, and tf.data runs Grappler over each function it treats as
*multi-device*: about 2.5 ms per function on this 2-core machine, 40 ms per
tfeed iterator (a dozen functions, five of them inside ``from_generator``),
while the decode ceiling's iterator takes 5 ms.  tf.data treats a function as
single-device, and skips Grappler, when it carries the
``experimental_ints_on_device`` attribute, as TensorFlow's own
``copy_to_device`` functions do.  All tfeed's functions run on the CPU
(the tf.data host), where the attribute changes nothing else.

Measured (2,000 cached images, 2 cores, TensorFlow 2.16-2.20): iterator
creation 40 -> 4-5 ms, first batch 120-165 -> 65-100 ms, epoch 1,060-1,080 ->
1,090-1,120 images/s.  Re-measured on TensorFlow 2.21 (256 ``file://`` images
at 224x224, median of 5 epochs, two runs each, other work on the machine):
iterator creation 74-84 -> 8-10 ms, first batch 251-311 -> 139-149 ms; so
the patch stays.

One tf.data rewrite breaks on such functions: with autotune on,
``inject_prefetch`` fails iterator creation ("Expected only one fetch node")
when a function returns an int32 among several outputs (labels do).  tfeed
pipelines end with their own prefetch, so :func:`keep_working` turns that
rewrite off in their options; a caller who turns it back on explicitly
meets the error.

The public ``Dataset.map`` takes no function attributes, so inside
:func:`single_device_functions` the functions that tf.data wraps *on this
thread* get the attribute (other threads, and code outside the block, are
untouched).  If a TensorFlow release changes the internal wrapper, nothing
is patched and pipelines simply start slower.
"""

from __future__ import annotations

import contextlib
import inspect
import threading

ATTRIBUTE = "experimental_ints_on_device"

_state = threading.local()
_install_lock = threading.Lock()
_installed = None  # None: not tried yet; then True / False


def _install() -> bool:
    """Wrap tf.data's function wrapper once; False if its shape is unknown."""
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        _installed = False
        try:
            from tensorflow.python.data.ops import structured_function
        except ImportError:
            return False
        wrapper = getattr(structured_function, "StructuredFunctionWrapper", None)
        if wrapper is None or "defun_kwargs" not in inspect.signature(wrapper.__init__).parameters:
            return False
        original = wrapper.__init__

        def __init__(self, *args, defun_kwargs=None, **kwargs):
            if getattr(_state, "active", False) and not kwargs.get("use_legacy_function", False):
                defun_kwargs = {**(defun_kwargs or {}), ATTRIBUTE: True}
            original(self, *args, defun_kwargs=defun_kwargs, **kwargs)

        wrapper.__init__ = __init__
        _installed = True
        return True


@contextlib.contextmanager
def single_device_functions(enabled: bool = True):
    """Within the block, tf.data functions built on this thread are single-device
    (no Grappler when an iterator instantiates them).  Yields whether that is
    in effect (False: this TensorFlow's internals were not recognised).
    ``enabled=False`` turns it off for a nested block (e.g. around a caller's
    own function, which may use resources on another device)."""
    active = _install() if enabled else False
    previous = getattr(_state, "active", False)
    _state.active = active
    try:
        yield active
    finally:
        _state.active = previous


def keep_working(options):
    """``options`` (a ``tf.data.Options``) without the ``inject_prefetch``
    rewrite, which fails on single-device functions returning an int32 among
    several outputs when autotune is on (see the module docstring)."""
    optimization = options.experimental_optimization
    if hasattr(optimization, "inject_prefetch"):  # older TensorFlow has no such rewrite
        optimization.inject_prefetch = False
    return options
