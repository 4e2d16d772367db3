"""What a wheel carries: the study files, found by ``sweep studies`` and ``--study NAME`` from
any folder, in a virtual environment that has never seen the clone."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import REPO, run_cli

from sweep import catalog
from sweep.errors import UserError

# One worker builds the wheel once, for the tests that read it and the one that installs it.
pytestmark = pytest.mark.xdist_group("packaging")

PACKAGED = sorted((REPO / "sweep" / "studies").glob("*.toml"))


def _description(path: Path) -> str:
    return str(tomllib.loads(path.read_text(encoding="utf-8")).get("description", ""))


def _listed(stdout: str) -> dict[str, str]:
    """``sweep studies``' output: each study's name and the rest of its line."""
    return {line.split()[0]: line for line in stdout.splitlines()}


def test_sweep_studies_lists_every_packaged_study_with_its_description(tmp_path: Path) -> None:
    assert len(PACKAGED) >= 5 and (REPO / "studies").resolve() == REPO / "sweep" / "studies"
    done = run_cli("sweep", "studies", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = _listed(done.stdout)
    assert sorted(listed) == [p.stem for p in PACKAGED]
    for path in PACKAGED:
        line = listed[path.stem]
        assert _description(path) in line and line.endswith("  packaged"), line
    # The same command under its alias: sweep/studies.py, not the folder sweep/studies/.
    alias = run_cli("sweep.studies", cwd=tmp_path)
    assert alias.returncode == 0, alias.stderr
    assert alias.stdout == done.stdout


def test_a_study_in_the_current_folder_is_listed_and_shadows_the_packaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "studies"
    own.mkdir()
    (own / "mine.toml").write_text('description = "my own study"\n')
    (own / "quickstart.toml").write_text('description = "my quick start"\n')
    (own / "broken.toml").write_text("description = \n")
    done = run_cli("sweep", "studies", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = _listed(done.stdout)
    assert set(listed) == {p.stem for p in PACKAGED} | {"mine", "broken"}
    assert "my own study" in listed["mine"]
    assert listed["mine"].endswith("./studies/mine.toml")
    assert "my quick start" in listed["quickstart"]
    assert listed["quickstart"].endswith("./studies/quickstart.toml")
    assert "(unreadable: " in listed["broken"]
    assert listed["exp3"].endswith("  packaged")
    # --study NAME resolves the same way.
    monkeypatch.chdir(tmp_path)
    assert catalog.find_study_file("quickstart") == own / "quickstart.toml"
    assert catalog.find_study_file("exp3") == catalog.packaged_dir() / "exp3.toml"
    with pytest.raises(UserError, match=r"unknown study 'exp9'; .*: broken, exp1"):
        catalog.find_study_file("exp9")


def test_the_repositorys_studies_link_is_listed_once_as_packaged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    assert len(catalog.studies_dirs()) == 1
    assert [path.parent for _, _, path in catalog.describe()] == [REPO / "studies"] * len(PACKAGED)


def test_sweep_studies_imports_no_tensorflow_keras_or_optuna() -> None:
    probe = (
        "import sys\n"
        "from sweep.cli import main\n"
        "main(['studies'])\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow', 'keras', 'optuna', 'sqlalchemy', 'matplotlib', 'plotly', 'pygal'}\n"
        "print('heavy:', sorted(heavy), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert "heavy: []" in done.stderr, done.stderr


def _can_build_offline() -> bool:
    # pyproject.toml asks for setuptools>=77; with it here, the build needs no download.
    if importlib.util.find_spec("setuptools") is None:
        return False
    return int(version("setuptools").split(".")[0]) >= 77


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of a copy of the sources: the build leaves nothing in the checkout."""
    root = tmp_path_factory.mktemp("build")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "sweep", src / "sweep", ignore=shutil.ignore_patterns("__pycache__"))
    isolation = ["--no-build-isolation"] if _can_build_offline() else []
    out = root / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("sweep-*.whl")
    return path


def test_the_wheel_holds_every_study_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {f"sweep/studies/{p.name}" for p in PACKAGED} <= names
        for path in PACKAGED:
            assert z.read(f"sweep/studies/{path.name}") == path.read_bytes()
        assert {"sweep/catalog.py", "sweep/studies.py", "sweep/commands/studies.py"} <= names


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.mark.slow
def test_an_installed_wheel_runs_the_packaged_quickstart_from_any_folder(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = _venv_python(venv)
    # TensorFlow and the rest come from this environment, without a download: a .pth line puts
    # its site-packages after the new one's. A path added by a .pth has its own .pth files
    # ignored, so this environment's editable install of the clone is not seen.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "sweep-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "SWEEP_STORAGE"}}
    env.pop("VIRTUAL_ENV", None)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=240
        )

    where = run(str(python), "-c", "import sweep; print(sweep.__file__)")
    assert where.returncode == 0, where.stderr
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(venv) and not installed.is_relative_to(REPO), installed
    packaged = installed.parent / "studies"

    sweep = str(venv / "bin" / "sweep")
    listed = run(sweep, "studies")
    assert listed.returncode == 0, listed.stderr
    assert sorted(_listed(listed.stdout)) == [p.stem for p in PACKAGED]
    assert all(line.endswith("  packaged") for line in listed.stdout.splitlines())

    quick = ("launch", "--study", "quickstart", "--subset", "200", "--max-epochs", "1")
    plan = run(sweep, *quick, "--dry-run")  # names the file --study quickstart resolved to
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"file       {packaged / 'quickstart.toml'}\n" in plan.stdout
    assert _description(packaged / "quickstart.toml") in plan.stdout

    launch = run(sweep, *quick, "--n-trials", "2", "--quiet")
    assert launch.returncode == 0, launch.stdout + launch.stderr
    assert "study 'quickstart' in sqlite:///sweep.db" in launch.stdout
    assert (elsewhere / "sweep.db").is_file()
