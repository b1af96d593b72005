"""The installed version, for reports and snapshot.json."""

from importlib.metadata import PackageNotFoundError, version


def tool_version() -> str:
    try:
        return version("regprune")
    except PackageNotFoundError:
        return "unknown"
