"""What tests and benchmarks share: deterministic simulators, their checkers, process helpers.

Nothing in the product imports this package. Its modules:

* :mod:`.simtime`: the event queue both simulators run on, under trio's ``MockClock``.
* :mod:`.gossipsim`: whole clusters of membership cores (and stores) over a simulated network
  with loss, delay, partitions and crashes, from one seed.
* :mod:`.logsim`: replicas of the replicated log over a simulated network and simulated disks
  (:mod:`.simdisk`: unsynced writes lost, torn tails, failed fsyncs), with crash points, clients
  and checkers, among them :mod:`.lincheck`, a linearizability checker.
* :mod:`.procs`: real ``vxnet log serve`` and ``vxnet master`` processes on loopback, and
  :func:`~.procs.free_ports`.
"""
