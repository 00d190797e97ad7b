"""Federation: peer daemons share signed model updates over Kafka (issue 5).

One module each: :mod:`.aggregate` (pure robust aggregators on tensors), :mod:`.align`
(label-map and standardiser alignment of a peer's model), :mod:`.codec` (the binary
update format), :mod:`.keys` (Ed25519 keys), :mod:`.verify` (who may send what).
"""
