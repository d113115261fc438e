"""The Redis broker transport: kombu's, except that a closing channel does not put the messages
it holds back on the queue.

A worker holds a message between its delivery and its acknowledgement (here: until a pool
process starts it, `task_acks_late=False`); kombu keeps a copy in Redis's `unacked` hash and
pushes it back to the queue when the channel closes. With celery 5.7 / kombu 5.7 that push can
end the worker: when Redis goes away, the consumer's cleanup (`on_connection_error_after_connected`)
calls `connection.collect()`, whose channel close fails reading the pending BRPOP and stops
before the push, then clears the transport's client; the `connection.close()` that follows
retries the push, which builds a connection pool from the cleared client:
`Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")`, and
the worker exits (tests/faults/test_execution_faults.py reproduces it).

Not pushing back is safe here because the queue carries only nudges (config/celery.py): every
execution and callback is an outbox row, and the reconciler re-dispatches any row still pending
after OUTBOX_RECONCILE_GRACE; the periodic jobs come again on their schedule. A held message
that outlives the worker stays in the `unacked` hash and kombu restores it after the visibility
timeout (an hour); by then its row is done, and the late delivery loses the row's compare-and-set
and does nothing. kombu's QoS documents `restore_at_shutdown` for this: "If disabled, unacked
messages won't be restored at shutdown."
"""

from __future__ import annotations

from kombu.transport import redis


class QoS(redis.QoS):
    restore_at_shutdown = False


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
