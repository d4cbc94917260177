"""iSCSI targets: name rules (:mod:`.iqn`), errors, and the tgt/LIO backends."""
