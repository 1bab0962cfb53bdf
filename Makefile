# wanbench: set-up, the main job and the tests. `make help` lists the targets.
PY ?= python3
OUT ?= reports
DEMO_ARGS ?= --size 256*256 --frame_num 9 --sample_steps 8

.PHONY: help install run demo test test-gpu

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## CPU torch wheel first (seconds, from the local file), then the project with its test extras
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"

run: install demo  ## set up, then the main job: a video from the tiny preset on the CPU

demo:  ## wan-generate, tiny preset, synthetic weights, a scikit-image picture, CPU
	@mkdir -p $(OUT)
	$(PY) -c "from skimage import data; from PIL import Image; Image.fromarray(data.astronaut()).save('$(OUT)/astronaut.png')"
	wan-generate --preset tiny --weights synthetic --device cpu --image $(OUT)/astronaut.png \
	  --prompt "An astronaut waves at the camera, the flag moves in the wind" \
	  --base_seed 42 $(DEMO_ARGS) --save_file $(OUT)/demo.mp4

test:  ## the test suite (GPU tests skip without CUDA)
	$(PY) -m pytest -q

test-gpu:  ## only the GPU tests (on a CUDA machine)
	$(PY) -m pytest -q -m gpu
