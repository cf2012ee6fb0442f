"""Tests against real, private Dovecot servers on 127.0.0.1: fixtures in ``conftest.py``,
accounts and what reads them in ``accounts.py``, an OAuth2 token endpoint in ``tokenserver.py``
and an identity provider with Google's and Microsoft's administrator grants in
``identityprovider.py``."""
