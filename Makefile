# The two commands of this project: `make test` and `make book`.
# Both create .venv on first use (torch==2.13.0 first: any other torch spec can pull a
# multi-GB CUDA build) and skip setup afterwards.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= quick

.PHONY: test book book-only check-book clean-book help

help:
	@echo "make test   - run the test suite (creates .venv on first use)"
	@echo "make book   - run the $(PROFILE) sweep, then build the book into _build/html"
	@echo "make check-book - check the built book in headless Chromium (links, images, errors)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --no-compile --disable-pip-version-check -e '.[book,dev,dask]'
	@# byte-compile on every core (pip does it on one); like pip, skip files of newer syntax
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the run kernels' glibc malloc settings (pqlib.sweep.KERNEL_MALLOC) for the whole sweep and
# build (its warm-up stages too), unless already set
MALLOC = $$($(BIN)/python -c 'from pqlib.sweep import kernel_malloc; \
	print(*(f"{k}={v}" for k, v in kernel_malloc().items()))')

book: $(STAMP)
	env $(MALLOC) $(BIN)/pqlib sweep --profile $(PROFILE)
	$(MAKE) book-only

book-only: $(STAMP)
	$(BIN)/python tools/execute_book.py
	env $(MALLOC) $(BIN)/jupyter-book build . -W --keep-going
	@echo "book: file://$(CURDIR)/_build/html/index.html"

check-book: $(STAMP)
	$(BIN)/python tools/check_book.py _build/html --screenshots _build/screenshots

clean-book:
	rm -rf _build
