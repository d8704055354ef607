"""Execute the book's notebooks that its execution cache lacks, one notebook per core.

`make book` runs this before `jupyter-book build`, which executes notebooks one after
another: the build then finds every notebook in its cache (``execute.cache`` in
_config.yml) and only renders. Each notebook runs as the build would run it (jupyter-cache's
``single_nb_execution``, in the notebook's folder, with _config.yml's timeout) and is
cached the same way. Notebooks already cached (by `make nbval` or an earlier build) with
their current code are skipped.

    python scripts/execute_notebooks.py [--jobs N] [book/NN_name.ipynb ...]

Exits 1, after the others have finished, when a notebook fails; its error is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]


def settings() -> dict:
    """_config.yml's ``execute`` section (cache folder, timeout, allow_errors)."""
    execute = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    if execute.get("execute_notebooks") != "cache":
        sys.exit("_config.yml: this script fills the cache of `execute_notebooks: cache`")
    return execute


def uncached(paths: list[Path], cache) -> list[Path]:
    """The notebooks whose current code has no executed copy in ``cache``."""
    todo = []
    for path in paths:
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo.append(path)
    return todo


def execute(path: Path, timeout: int | None, allow_errors: bool) -> tuple[str, float, str | None]:
    """Run one notebook as myst-nb does; return its executed JSON, seconds, error text."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(path.parent), timeout=timeout,
                                 allow_errors=allow_errors, meta_override=True)
    return nbformat.writes(result.nb), result.time, result.exc_string


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-j", default="auto",
                        help="notebooks executed at once (default auto: one per core)")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to execute (default: book/*.ipynb)")
    args = parser.parse_args(argv)
    jobs = default_jobs() if args.jobs == "auto" else int(args.jobs)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "book").glob("*.ipynb"))

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    config = settings()
    cache = get_cache(str(ROOT / config["cache"]))
    todo = uncached(paths, cache)
    print(f"execute: {len(paths) - len(todo)} of {len(paths)} notebooks already in "
          f"{config['cache']}; executing {len(todo)}, {min(jobs, len(todo))} at a time",
          flush=True)
    failed = []
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo) or 1))) as pool:
        futures = {pool.submit(execute, path, config.get("timeout"),
                               bool(config.get("allow_errors", False))): path for path in todo}
        for future in as_completed(futures):
            path = futures[future]
            text, seconds, error = future.result()
            name = path.relative_to(ROOT)
            if error:
                failed.append(name)
                print(f"execute: {name} FAILED after {seconds:.1f} s\n{error}", flush=True)
                continue
            cache.cache_notebook_bundle(
                CacheBundleIn(nbformat.reads(text, as_version=4), str(path),
                              data={"execution_seconds": seconds}),
                check_validity=False, overwrite=True)
            print(f"execute: {name} {seconds:.1f} s", flush=True)
    if todo:
        print(f"execute: {len(todo)} notebooks in {time.perf_counter() - start:.1f} s wall",
              flush=True)
    if failed:
        print(f"execute: failed: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
