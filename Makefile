# mingexp — every target sets up its own virtual environment first, so each works on a fresh machine.
#   make test       fast test suite (what CI runs)
#   make test-full  every test, the slow ones too
#   make train      the main job: the toy world, trained end to end on this machine
#   make demo       the trained toy model in the browser (after make train)
#   make bench      the benchmark scripts (ratios against a baseline measured in the same run)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The CPU wheel here, the CUDA build on a GPU cluster: same line, see README.
TORCH  ?= torch==2.13.0

.PHONY: install test test-full bench train demo tiny lock clean

# -e ".[dev]" installs every extra (demo, lora, report, tracking: pyproject.toml's dev includes them all) and the
# test tools, slurm's launcher included (its tests run it through submitit's local executor); gpu (flash-attn) is yours to add.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-full: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/prefix_cache.py
	$(BIN)/python benchmarks/data_throughput.py
	$(BIN)/python benchmarks/inference_latency.py
	$(BIN)/python benchmarks/step_time.py
	$(BIN)/python benchmarks/latent_step.py

# The main job: the toy world end to end on this machine. Stage 0 trains the toy MLLM for understanding
# (once; skipped when .cache/toy/mllm exists), then the unified model trains with it frozen.
train: $(STAMP)
	test -f .cache/toy/mllm/config.json || $(BIN)/python -m mingexp.train +experiment=toy_mllm
	$(BIN)/python -m mingexp.train

# The web demo of the newest run `make train` wrote (python -m mingexp.demo; http://127.0.0.1:7860).
demo: $(STAMP)
	@ckpt=$$(ls -t outputs/train/runs/*/checkpoints/last.ckpt 2>/dev/null | head -1); \
	test -n "$$ckpt" || { echo "make demo: no trained run under outputs/train/runs: run make train first"; exit 1; }; \
	$(BIN)/python -m mingexp.demo model=$$ckpt

# Writes the tiny real checkpoints (Qwen2.5-VL, Qwen2, SANA, DC-AE, the released layout) the toy preset and tests load.
tiny: $(STAMP)
	$(BIN)/python -m mingexp.models.tiny .cache/toy

# Pins what the venv holds now (after testing a new set of versions) as the versions every make installs.
lock: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
