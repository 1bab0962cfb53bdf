"""wan_runtime: the Wan2.2-I2V-A14B image-to-video runtime measured by wanbench."""

from wan_runtime.config import A14B, PRESETS, TINY, ModelConfig, get_preset

__version__ = "0.1.0"

__all__ = ["A14B", "TINY", "PRESETS", "ModelConfig", "get_preset", "__version__"]
