import sys
from pathlib import Path

# Reuse the trainer tests' helpers (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "trainer"))
