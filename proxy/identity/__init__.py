"""Mesh identity: naming, the certificate authority (``meshproxy identity init``),
the issuer service (``meshproxy identity serve``) and the client a proxy uses
to obtain its certificate."""
