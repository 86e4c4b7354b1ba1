"""Single-shot search: one weight-sharing supernet (``nasctl.nn.supernet``) trained once
(``train``), its subnets scored by the weights they inherit (``evaluate``)."""
