"""The cluster's own certificate authority: who may take part in the masters' log and API.

Only the holders of a certificate from the cluster's CA take part (the promise of etcd's
``--client-cert-auth``, Consul's TLS and Docker swarm's mutual TLS). A certificate carries one
role, read by whoever verifies it:

* ``master``: a replica of the log (peers must hold one) and a server of the master API;
* ``agent``: registers its host with the masters;
* ``operator``: a person or tool that reads and changes the cluster (``vxnet`` commands).

The role is a URI subject alternative name, ``vxnet://role/<role>``, with the organizational
unit ``<role>`` beside it for people reading the certificate. Keys are EC P-256, written with mode
0600 and never overwritten unless asked.

* :mod:`._ca`: :func:`init_ca` (a CA and the cluster's gossip key), :func:`issue`,
  :func:`describe` (what ``vxnet pki show`` prints) and :func:`role_of`.
* :mod:`._tls`: :class:`Tls`, the TLS 1.3 server and client contexts (client certificates
  required, verified against the CA) of a process holding a certificate, reloaded in place by
  :meth:`Tls.reload` (the daemons' SIGHUP, :func:`reload_logged`), and :func:`peer_role`.
* :mod:`._stream`: :func:`tls_over`, TLS done by OpenSSL on a trio TCP stream's socket (the
  log's and the APIs' connections).
"""

from vxnet.pki import _ca, _stream, _tls
from vxnet.pki._ca import *  # noqa: F403 - each module's __all__ is its public part
from vxnet.pki._stream import *  # noqa: F403
from vxnet.pki._tls import *  # noqa: F403

__all__ = [*_ca.__all__, *_stream.__all__, *_tls.__all__]
