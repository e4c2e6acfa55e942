"""Scratch: model-0 convergence: excess (KL per token) vs epochs, CPU time per fit."""
import sys, time, json
import numpy as np, torch; torch.set_num_threads(1)
from sweep.config import load_config
from sweep.problems.families import build_problem, build_model, excess_loss
from sweep.engine.chain import seed_streams

def m0(overrides, seed):
    cfg = load_config("configs/quick.yaml", overrides)
    st = seed_streams(seed)
    pb = build_problem(cfg, np.random.default_rng(st["data"]))
    model = build_model(cfg, pb, np.random.default_rng(st["model0"]))
    t = time.process_time()
    model.fit(pb.real_train, np.random.default_rng(st["model0"]))
    dt = time.process_time() - t
    lp = model.log_prob(pb.test)
    return dict(kl=round(excess_loss(model, pb, lp, pb.truth.item_size(pb.test)), 4), cpu=round(dt, 2), steps=model.summary()["steps"])

if __name__ == "__main__":
    eps = [float(e) for e in sys.argv[2].split(",")]
    base = sys.argv[3:]
    for ep in eps:
        rs = [m0(base + [f"model.train.epochs={ep}"], s) for s in range(int(sys.argv[1]))]
        print(ep, " ".join(base), "kl", [r["kl"] for r in rs], "cpu", np.mean([r["cpu"] for r in rs]).round(2), "steps", rs[0]["steps"], flush=True)
