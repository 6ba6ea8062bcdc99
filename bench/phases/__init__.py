"""The phases of a bench run, in the order `bench.__main__` runs them; each writes its figures to the
run's `Harness` (bench/README.md, "Phases", says what each measures and why so).

| module | phases |
|---|---|
| `baseline` | the raw aiokafka loop and the one-agent Faust app: the ceilings |
| `latency` | draw-to-send latency of new and known subscribers; new ones with senders apart |
| `intake` | the warm-up (every member imported) and intake throughput to subscriber.ready |
| `sends` | MC sends/s over the ready backlog |
| `backlog` | worker RSS with a big backlog waiting |
| `uploads` | SFTP uploads against the windows closed |
| `mc_budget` | emails per MC call and per hour inside MC's budget, batched and one per call |
"""
