"""Whole vxnet clusters on one machine, in network namespaces: the sandbox and the test labs.

Nothing in the product imports this package; it builds on the product. Its modules:

* :mod:`.lab`: hosts as network namespaces on one underlay bridge, kept and cleaned up by a file.
* :mod:`.cluster`: real ``vxnet master`` and ``vxnet agent`` processes in a lab, their
  configurations written from the same dataclasses a deployment loads.
* :mod:`.dockerd`: a private ``dockerd`` in a lab host, and the offline busybox image.
* :mod:`.cni`: containers attached by running the CNI plugins with an agent's conflist.
* :mod:`.knot`: Knot DNS serving a zone, the reference of the DNS benchmark.
* :mod:`._sandbox` and :mod:`.cli`: ``vxnet sandbox up|status|check|exec|logs|kill|start|down``.
"""
