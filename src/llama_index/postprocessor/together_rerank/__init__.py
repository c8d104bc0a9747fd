"""``from llama_index.postprocessor.together_rerank import TogetherRerank``.

The import path LlamaIndex integrations use. This is a portion of the PEP 420 namespace
packages ``llama_index`` and ``llama_index.postprocessor`` (neither has an ``__init__.py``
here), so other ``llama_index.postprocessor.*`` packages keep working beside it. The class
is :class:`together_rerank_plugins.llama_index.TogetherRerank`.
"""

from together_rerank_plugins.llama_index import TogetherRerank

__all__ = ["TogetherRerank"]
