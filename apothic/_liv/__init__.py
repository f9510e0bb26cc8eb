"""Generated functions (``@apothic.liv``): implementations generated from their stubs at deploy.

- ``_config``: ``LivConfig``, the ``@apothic.liv(...)`` mark and the checks made at decoration
  (the stub, its docstring, the examples' shape);
- ``_stub``: what the model is shown (the stub's ``def``, docstring and examples) and the cache key;
- ``_check``: the code found in an answer, checked without running it (it parses; it defines the
  function with the stub's signature);
- ``_frozen``: the shipped form (``LivCode``) and what turns it into a function, in the
  function's container only (with the examples' checks for a candidate);
- ``_types``: whether a value fits a type annotation;
- ``_deploy``: the client's part of a deploy (start the generation, wait, freeze the code);
- ``_cache``: the generations kept on the control plane's host;
- ``_show``: ``apothic liv show``.

The generation itself is the ``LivWorkflow`` (``apothic.workflows._liv``) and its activities
(``apothic.activities._liv``), run by the control worker.
"""
