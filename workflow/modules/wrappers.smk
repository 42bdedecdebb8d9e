# Where a module's rules find the catalog's wrappers: next to the module, wherever Snakemake loaded it from (a
# path, github(..., tag=...) or gitfile(...)), so that an imported module runs the wrappers of its own release.
# Included by every module.
import os

CATALOG_WRAPPERS = workflow.current_basedir.join("../../wrappers")


def catalog_wrapper(name):
    """The `wrapper:` of the catalog's wrapper `name`: a GitHub or git URL, or file:<path> for a local module."""
    uri = CATALOG_WRAPPERS.join(name).get_path_or_uri(secret_free=True)
    if "://" in uri:
        return uri
    return f"file:{os.path.normpath(uri)}"
