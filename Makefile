# wanbench: set-up, the main job and the tests. `make help` lists the targets.
PY ?= python3
OUT ?= reports
# The main job's run folder: the smoke suite's results, its report in report/, the demo video beside it.
RUN_OUT ?= $(OUT)/smoke
DEMO_ARGS ?= --size 128*128 --frame_num 9 --sample_steps 8
DEMO_OUT ?= $(OUT)

# Suites, reports and gates. SET passes overrides to `wanbench run` (e.g. SET="--set repeats=1").
SET ?=
RUNS ?= $(OUT)/smoke
REPORT_OUT ?=
BASELINE ?=
CURRENT ?=
COMPARE_ARGS ?=
SIZE ?=
BENCH_OUT = $(OUT)/bench-h100$(if $(SIZE),-$(subst *,x,$(SIZE)))
BENCH_4090_OUT = $(OUT)/bench-4090$(if $(SIZE),-$(subst *,x,$(SIZE)))
OFFLOAD_OUT = $(OUT)/offload$(if $(SIZE),-$(subst *,x,$(SIZE)))
SPEED_OUT = $(OUT)/speed$(if $(SIZE),-$(subst *,x,$(SIZE)))
# The regression suite at tiny scale on a CPU: how baselines/regression-tiny-cpu was made.
REGRESSION_TINY = --preset tiny --set device=cpu --set 'size=80*48' --set frames=5
MICROBENCH_STORAGE ?= $(OUT)/microbench

.PHONY: help install run demo test test-gpu smoke report compare regression bench-h100 bench-4090 offload offload-quality cross-res quality speed speed-quality multi-gpu serve-load microbench

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## CPU torch wheel first (seconds, from the local file), then the project with its test extras
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"

run: install  ## set up, then the main job: the smoke suite afresh (tiny preset, CPU), its report, a demo video beside it
	rm -rf $(RUN_OUT)
	wanbench run smoke --out $(RUN_OUT) $(SET)
	@mkdir -p $(RUN_OUT)/report
	@echo "measurements done: the report and the demo video ($(RUN_OUT)/report/demo.log) are made side by side"
	@{ $(call DEMO,$(RUN_OUT)/report); } > $(RUN_OUT)/report/demo.log 2>&1 & demo=$$!; \
	  wanbench report $(RUN_OUT) || exit 1; \
	  wait $$demo || { cat $(RUN_OUT)/report/demo.log; exit 1; }
	@echo "demo:   $(RUN_OUT)/report/demo.mp4 ($(DEMO_ARGS))"
	@echo "open $(RUN_OUT)/report/report.html in a browser: the whole report in one file"

# The demo video into folder $(1): a scikit-image picture, wan-generate on the tiny preset, synthetic weights, CPU.
DEMO = $(PY) -c "from skimage import data; from PIL import Image; Image.fromarray(data.astronaut()).save('$(1)/astronaut.png')" && \
  wan-generate --preset tiny --weights synthetic --device cpu --image $(1)/astronaut.png \
  --prompt "An astronaut waves at the camera, the flag moves in the wind" \
  --base_seed 42 $(DEMO_ARGS) --save_file $(1)/demo.mp4

demo:  ## wan-generate, tiny preset, synthetic weights, a scikit-image picture, CPU, into DEMO_OUT (default OUT)
	@mkdir -p $(DEMO_OUT)
	$(call DEMO,$(DEMO_OUT))

test:  ## the test suite (GPU tests skip without CUDA)
	$(PY) -m pytest -q

test-gpu:  ## only the GPU tests (on a CUDA machine)
	$(PY) -m pytest -q -m gpu

smoke:  ## the smoke suite (tiny preset, CPU, ~36 s of CPU) into $(OUT)/smoke (resumes), then its report
	wanbench run smoke --out $(OUT)/smoke $(SET)
	wanbench report $(OUT)/smoke

report:  ## report.md/.html, PNGs and CSVs of RUNS (run folders; default $(OUT)/smoke) into REPORT_OUT
	wanbench report $(RUNS) $(if $(REPORT_OUT),--out $(REPORT_OUT))

compare:  ## compare CURRENT with BASELINE (run folders or results.jsonl files); exit 1 on a regression
	@test -n "$(BASELINE)" -a -n "$(CURRENT)" || { echo "usage: make compare BASELINE=DIR|FILE CURRENT=DIR|FILE [COMPARE_ARGS='--gate total_ms=rel:0.1,abs:200']"; exit 2; }
	wanbench compare $(BASELINE) $(CURRENT) $(COMPARE_ARGS)

regression:  ## run the regression suite afresh into $(OUT)/regression and compare it with BASELINE
	@test -n "$(BASELINE)" || { echo "usage: make regression BASELINE=DIR|FILE [SET='\$$(REGRESSION_TINY)' for a CPU]"; exit 2; }
	rm -rf $(OUT)/regression
	wanbench run regression --out $(OUT)/regression $(SET)
	wanbench compare $(BASELINE) $(OUT)/regression $(COMPARE_ARGS)

bench-h100:  ## A14B 480p+720p, 3 plans, sampled timing (GPU); SIZE=832*480 runs one resolution into its own folder
	wanbench run bench-h100 --out $(BENCH_OUT) $(if $(SIZE),--set 'size=$(SIZE)') $(SET)
	wanbench report $(BENCH_OUT)

bench-4090:  ## A14B within a 24 GiB cap (RTX 4090), 480p+720p, the 3 plans that can fit (GPU); SIZE=... as bench-h100; on a real 4090 SET="--set vram_budget_gib=null"
	wanbench run bench-4090 --out $(BENCH_4090_OUT) $(if $(SIZE),--set 'size=$(SIZE)') $(SET)
	wanbench report $(BENCH_4090_OUT)

cross-res:  ## native 720p vs 480p upscaled vs refine mode, PSNR/SSIM against native 720p (GPU, long)
	wanbench run cross-res --out $(OUT)/cross-res $(SET)
	wanbench report $(OUT)/cross-res

offload:  ## A14B memory plans (resident/swap/stream x bf16/fp8), 480p+720p, sampled timing (GPU); SIZE=... as bench-h100
	wanbench run offload --out $(OFFLOAD_OUT) $(if $(SIZE),--set 'size=$(SIZE)') $(SET)
	wanbench report $(OFFLOAD_OUT)

offload-quality:  ## PSNR/SSIM of fp8, VAE tiling, swap and stream vs resident bf16 (GPU, ~5 min on an H100)
	wanbench run offload-quality --out $(OUT)/offload-quality $(SET)
	wanbench report $(OUT)/offload-quality

multi-gpu:  ## A14B 480p+720p on 1-8 GPUs of this box (Ulysses x CFG parallel, expert split), sampled timing, groups side by side
	wanbench run multi-gpu --gpus all --out $(OUT)/multi-gpu $(SET)
	wanbench report $(OUT)/multi-gpu

speed:  ## exact / compiled / SageAttention / fp8 compute plans, 480p+720p, sampled timing (GPU); SIZE=... as bench-h100
	wanbench run speed --out $(SPEED_OUT) $(if $(SIZE),--set 'size=$(SIZE)') $(SET)
	wanbench report $(SPEED_OUT)

speed-quality:  ## PSNR/SSIM of the speed plans vs the exact plan, short full schedule (GPU, ~7 min on an H200)
	wanbench run speed-quality --out $(OUT)/speed-quality $(SET)
	wanbench report $(OUT)/speed-quality

quality:  ## steps x guidance x shift against a 75-step reference (GPU, long)
	wanbench run quality --out $(OUT)/quality $(SET)
	wanbench report $(OUT)/quality

serve-load:  ## a bounded load on `wanbench serve` over loopback (40 requests, 8 clients, queue 4; tiny preset, CPU) into $(OUT)/serve-load
	rm -rf $(OUT)/serve-load
	$(PY) bench/serve_load.py --out $(OUT)/serve-load

microbench:  ## pytest-benchmark micro-benchmarks (DiT block, attention backends, VAE chunk, NVML sampler): saved, compared with the last save
	$(PY) -m pytest -q tests/benchmarks --benchmark-storage=$(MICROBENCH_STORAGE) --benchmark-autosave \
	  $(if $(wildcard $(MICROBENCH_STORAGE)/*/*.json),--benchmark-compare) --benchmark-columns=min,median,max,rounds
