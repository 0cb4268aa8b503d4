"""Example plugins for `cargo xtask demo`. Each is an ordinary cjm plugin."""

import time

from cjm_worker import PluginInterface


class TextStats(PluginInterface):
    """Counts words and characters."""

    name = "text-stats"
    version = "1.0.0"

    def initialize(self, config=None):
        self.config = dict(config or {})

    def get_config_schema(self):
        return {"type": "object", "properties": {"lowercase": {"type": "boolean", "default": True}}}

    def get_current_config(self):
        return dict(self.config)

    def execute(self, text):
        words = text.lower().split() if self.config.get("lowercase", True) else text.split()
        return {"words": len(words), "unique": len(set(words)), "chars": len(text)}


class Transcriber(PluginInterface):
    """Pretends to transcribe: streams one segment at a time, with progress."""

    name = "transcriber"
    version = "1.0.0"

    def initialize(self, config=None):
        pass

    def get_config_schema(self):
        return {"type": "object"}

    def get_current_config(self):
        return {}

    def execute(self, *args, **kwargs):
        return list(self.execute_stream(*args, **kwargs))

    def execute_stream(self, segments=8):
        lines = ["the quick", "brown fox", "jumps over", "the lazy", "dog and", "keeps on", "running", "home"]
        for i in range(segments):
            self.check_cancel()
            time.sleep(0.15)
            self.report_progress((i + 1) / segments, f"segment {i + 1}/{segments}")
            yield {"start": i * 1.5, "end": (i + 1) * 1.5, "text": lines[i % len(lines)]}


class ImageOps(PluginInterface):
    """Works on large arrays the host passes through shared memory."""

    name = "image-ops"
    version = "1.0.0"

    def initialize(self, config=None):
        pass

    def get_config_schema(self):
        return {"type": "object"}

    def get_current_config(self):
        return {}

    def execute(self, image, op="mean"):
        import numpy as np

        if op == "mean":
            return {"mean": float(image.mean()), "shape": list(image.shape), "zero_copy": not image.flags.owndata}
        if op == "invert":
            from cjm_worker import shm_alloc

            out = np.frombuffer(shm_alloc(image.nbytes), dtype=image.dtype).reshape(image.shape)
            np.subtract(255, image, out=out)
            return out
        raise ValueError(f"unknown op {op!r}")


class Flaky(PluginInterface):
    """Sometimes it crashes hard; sometimes it runs too long."""

    name = "flaky"
    version = "0.1.0"

    def initialize(self, config=None):
        pass

    def get_config_schema(self):
        return {"type": "object"}

    def get_current_config(self):
        return {}

    def execute(self, mode="ok"):
        if mode == "segfault":
            import ctypes

            ctypes.string_at(0)
        if mode == "slow":
            while True:
                self.check_cancel()
                time.sleep(0.01)
        if mode == "fail-twice":
            # A transient failure the first two times (counted in its data folder).
            import os

            from cjm_worker.errors import PluginTransientError

            path = os.path.join(os.environ.get("CJM_DATA_DIR", "."), "tries")
            tries = int(open(path).read()) + 1 if os.path.exists(path) else 1
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(str(tries))
            if tries <= 2:
                raise PluginTransientError(f"the service was busy (try {tries})")
            return f"ok after {tries} tries"
        return "ok"


class Model(PluginInterface):
    """A "model" on the scripted fake GPU: loading it holds `vram_mb` of GPU
    memory on the device its worker is pinned to; a call works for `ms`."""

    name = "model"
    version = "0.1.0"

    def initialize(self, config=None):
        from cjm_worker import fake_gpu

        self.config = dict(config or {})
        fake_gpu.allocate(float(self.config.get("vram_mb", 0)))

    def get_config_schema(self):
        return {"type": "object", "properties": {"vram_mb": {"type": "integer", "default": 0}}}

    def get_current_config(self):
        return self.config

    def execute(self, ms=0, activations_mb=0):
        from cjm_worker import fake_gpu

        if activations_mb:
            fake_gpu.allocate(float(activations_mb))
        time.sleep(ms / 1000)
        if activations_mb:
            fake_gpu.free(float(activations_mb))
        return {"gpu": fake_gpu.device(), "held_mb": fake_gpu.held()}
