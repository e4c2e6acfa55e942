"""Scratch: run quick.yaml chains under overrides; per seed: excess gap, CPU and wall time."""
import sys, time, json
import numpy as np, torch; torch.set_num_threads(1)
from sweep.config import load_config
from sweep.engine.chain import Chain

def run(overrides, seeds):
    out = []
    for s in seeds:
        cfg = load_config("configs/quick.yaml", overrides + ["collapse.stop_early=false"])
        t, c = time.perf_counter(), time.process_time()
        ch = Chain(cfg, seed=s)
        while not ch.done:
            ch.step()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        ex = [r["excess"] for r in ch.rows]
        sm = ch.summary()
        out.append(dict(seed=s, wall=round(dt, 2), cpu=round(dc, 2), gap=round(sm["quality_gap"], 3),
                        ex=[round(k, 3) for k in ex], flops=f"{sm['total_flops']:.4g}",
                        ms=round(ch.rows[-1].get("minority_share", np.nan), 4),
                        ms_truth=round(ch.rows[-1].get("minority_share_truth", np.nan), 4)))
        print(json.dumps(out[-1]), flush=True)
    return out

if __name__ == "__main__":
    seeds = [int(a) for a in sys.argv[1].split(",")] if "," in sys.argv[1] else list(range(int(sys.argv[1])))
    run(sys.argv[2:], seeds)
