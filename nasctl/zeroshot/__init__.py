"""Zero-shot (training-free) scores and their evaluation.

``proxies``: the scores (NASWOT, SWAP, MeCo, SynFlow, grad_norm, SNIP, ZiCo, AZ-NAS and
the ``params`` / ``flops`` baselines), each a pure function of (model, batch, seed), and
rank votes of several. ``evaluate``: ``proxy-eval``, which trains archs of a space and
measures how well each score ranks them. The search strategy that uses them is
``nasctl.search.strategies.zeroshot``.
"""
