"""Project locations: the repo root, and the folders the code reads and writes."""
import os
import pathlib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]  # covgan_utils/
PROJECT_ROOT = pathlib.Path(os.environ.get("COVGAN_HOME", PACKAGE_DIR.parent)).resolve()
DATA_DIR = PROJECT_ROOT / "data"
RAW_DIR = DATA_DIR / "raw"
PROCESSED_DIR = DATA_DIR / "processed"
MODELS_DIR = PROJECT_ROOT / "models"
RELEASE_DIR = MODELS_DIR / "release"
EXPORTS_DIR = PROJECT_ROOT / "exports"
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "covid-ct"
