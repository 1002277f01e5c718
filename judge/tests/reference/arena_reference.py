"""Reference figures for judge/src/arena.rs and judge/src/gate.rs, computed independently of the Rust.

Bradley-Terry MAP (Gamma(2, 1) prior on each strength pi = e^theta) is fitted here by Newton's method on
the log-posterior in theta, not by the MM iterations the crate uses; the two agree only if both are right.
The bootstrap replays the crate's documented recipe (SplitMix64 from the seed, index = (u64 * n) >> 64,
numpy's linear percentiles), so the Rust intervals can be checked digit for digit.

Run: python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy && /tmp/np/bin/python arena_reference.py
"""
import numpy as np

A, B, TIE, BOTH_BAD = "a", "b", "tie", "both_bad"
SHAPE, RATE = 2.0, 1.0
MASK = (1 << 64) - 1

# (version on side a, version on side b, outcome, P(a wins) when the judge gave one). Version 0 is the base.
DUELS = [
    (1, 0, A, None), (0, 1, B, None), (1, 0, B, None),
    (2, 1, A, None), (1, 2, TIE, None), (2, 1, BOTH_BAD, None),
    (2, 0, A, None), (0, 2, A, None),
    (3, 1, A, None), (1, 3, B, None), (3, 1, B, None), (3, 1, TIE, None), (1, 3, BOTH_BAD, None),
    (3, 2, A, None), (2, 3, A, None), (2, 3, B, 0.25),
    (3, 0, A, None), (0, 3, BOTH_BAD, None),
]
VERSIONS = [0, 1, 2, 3]


def p_a(outcome, strength):
    if strength is not None:
        return strength
    return {A: 1.0, B: 0.0, TIE: 0.5, BOTH_BAD: 0.5}[outcome]


def win_matrix(k, duels):
    w = np.zeros((k, k))
    for a, b, outcome, strength in duels:
        p = p_a(outcome, strength)
        w[a, b] += p
        w[b, a] += 1.0 - p
    return w


def bt_map_newton(w):
    """theta maximising sum w_ij log sigma(theta_i - theta_j) + (a - 1) theta_i - b e^theta_i."""
    k = len(w)
    n = w + w.T
    theta = np.zeros(k)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = w.sum(1) - (n * p).sum(1) + (SHAPE - 1.0) - RATE * np.exp(theta)
        v = n * p * (1.0 - p)
        hess = v - np.diag(v.sum(1) + RATE * np.exp(theta))
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-15:
            break
    return theta


def splitmix64(seed):
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


def bootstrap(items, statistic, rounds=1000, seed=0, confidence=0.95):
    rng = splitmix64(seed)
    n = len(items)
    values = []
    for _ in range(rounds):
        sample = [items[(next(rng) * n) >> 64] for _ in range(n)]
        values.append(statistic(sample))
    tail = (1.0 - confidence) / 2.0
    return np.percentile(np.array(values), [100 * tail, 100 * (1 - tail)], axis=0)


def anchored_theta(duels):
    theta = bt_map_newton(win_matrix(len(VERSIONS), duels))
    return theta - theta[0]


# Cross-check against research/algorithms.md §7.3: MAP pi = [1.259851, 1.184630, 0.555519].
S73 = [(0, 1, A, None), (0, 1, A, None), (0, 1, B, None), (1, 2, A, None), (2, 1, B, None), (0, 2, TIE, None)]
print("§7.3 MAP pi:", np.round(np.exp(bt_map_newton(win_matrix(3, S73))), 6))

print("Leaderboard, strengths anchored at version 0 (Gamma(2, 1) MAP):")
theta = anchored_theta(DUELS)
lower, upper = bootstrap(DUELS, anchored_theta)
w = win_matrix(len(VERSIONS), DUELS)
for v in VERSIONS:
    mine = [d for d in DUELS if v in d[:2]]
    both_bad = sum(d[2] == BOTH_BAD for d in mine)
    print(f"  version {v}: theta {theta[v]:.6f} [{lower[v]:.6f}, {upper[v]:.6f}]  judgments {len(mine)}"
          f"  wins {w[v].sum():.2f}  win-rate {w[v].sum() / len(mine):.6f}  both-bad {both_bad}")

print("Candidate 3 vs incumbent 1:")
head = [d for d in DUELS if set(d[:2]) == {1, 3}]
wins = sum(p_a(o, s) if a == 3 else 1.0 - p_a(o, s) for a, b, o, s in head)


def p_candidate(sample):
    w2 = np.zeros((2, 2))
    for a, b, o, s in sample:
        p = p_a(o, s) if a == 3 else 1.0 - p_a(o, s)
        w2[0, 1] += p
        w2[1, 0] += 1.0 - p
    t = bt_map_newton(w2)
    return 1.0 / (1.0 + np.exp(t[1] - t[0]))


lo, hi = bootstrap(head, p_candidate)
print(f"  judgments {len(head)}  wins {wins}  win-rate {wins / len(head):.6f}"
      f"  P(candidate > incumbent) {p_candidate(head):.6f} (Laplace (W+1)/(n+2) = {(wins + 1) / (len(head) + 2):.6f})"
      f"  95% [{lo:.6f}, {hi:.6f}]")
