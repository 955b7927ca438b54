"""Sphinx configuration of the spectral_ops documentation.

Build from the repository root with warnings as errors::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import importlib

import spectral_ops

# The optimizer pages document spectral_ops.adapters.torch and .optax, which
# import PyTorch, JAX and optax. Where they are installed (the test extras) the
# real modules are used; an install with only the docs extra mocks the missing
# ones so that the build still succeeds.
autodoc_mock_imports = []
for _name in ("torch", "jax", "optax"):
    try:
        importlib.import_module(_name)
    except ImportError:
        autodoc_mock_imports.append(_name)

project = "spectral-ops"
author = "spectral-ops developers"
copyright = "spectral-ops developers"
version = spectral_ops.__version__
release = spectral_ops.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "plots", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math, and LaTeX environments such as align.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# autosummary writes one page per object into api/generated/ (not committed).
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True

# numpydoc renders the docstrings; the class pages list their attributes from
# the docstring's Attributes section, so no automatic member tables.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"spectral-ops {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
