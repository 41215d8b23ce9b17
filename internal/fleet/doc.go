// Package fleet coordinates the hosts of one app and group through etcd, so
// they roll a target out in waves: at most max_parallel hosts switching at
// once, canaries first and a soak, one migration per target, and a halt
// once too many hosts failed.
//
// Every decision that bounds something is an etcd transaction, never a
// read followed by a write: a switch slot is a key created only if absent
// (CreateRevision == 0) under the agent's session lease, in the same
// transaction that checks the rollout is not halted; a killed agent's
// slot frees itself when its lease expires. Waiting is driven by watches,
// with a poll as a safety net that also notices an unreachable etcd.
//
// Keys, under /reconciler/<app>/<group>/:
//
//	agents/<host>                   the agent's Status (JSON), bound to its lease
//	slots/<i>                       a switch slot, i in 0..max_parallel-1, leased
//	suspended                       present while the group is suspended
//	rollouts/<target>/canaries      the canary hosts, chosen once (JSON)
//	rollouts/<target>/built/<h>     h reported the target built
//	rollouts/<target>/switched/<h>  h took a slot for the target
//	rollouts/<target>/healthy/<h>   h switched and is healthy
//	rollouts/<target>/failed/<h>    h failed the target (its error)
//	rollouts/<target>/failures      how many hosts failed, the halt's counter
//	rollouts/<target>/halted        why the rollout stopped; no slot after it
//	rollouts/<target>/soaked        the first host that saw the soak end
//	rollouts/<target>/migrate/lock  the host migrating, leased
//	rollouts/<target>/migrate/done  the host that migrated
//	rollouts/<target>/migrate/failed  the host whose migration failed, and why
//
// The package knows nothing of apply: the executor and the daemon call
// the Gate interface.
package fleet
