"""torchcfm's U-Net module without the rest of torchcfm: its __init__.py imports the optimal-transport extras (POT),
which neither the benchmark nor the reference tests need. Shared by scripts/bench_ref.py and tests/ref/."""
import importlib
import importlib.util
import sys
import types


def torchcfm_unet_module():
    """torchcfm.models.unet.unet; exits with 77 (a skipped test) when torchcfm is not installed."""
    if "torchcfm" not in sys.modules:
        spec = importlib.util.find_spec("torchcfm")
        if spec is None:
            print("torchcfm is not installed", file=sys.stderr)
            sys.exit(77)
        pkg = types.ModuleType("torchcfm")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["torchcfm"] = pkg
    return importlib.import_module("torchcfm.models.unet.unet")
