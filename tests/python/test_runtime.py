"""The GIL is released while kernels run (another Python thread makes progress
during a forward pass), and Ctrl-C stops a Python training loop between steps."""
import os
import signal
import subprocess
import sys
import threading
import time

import quanta


def test_other_python_threads_run_while_a_forward_pass_runs():
    model = quanta.models.make("fmnist_resnet8", seed=0)
    model.eval()
    x = quanta.randn(256, 1, 28, 28)
    with quanta.no_grad():
        model(x)  # warm up
        start = time.perf_counter()
        model(x)
        alone = time.perf_counter() - start
    ticks, stop = [0], threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1

    thread = threading.Thread(target=count)
    thread.start()
    time.sleep(0.05)
    before = ticks[0]
    with quanta.no_grad():
        start = time.perf_counter()
        model(x)
        during = time.perf_counter() - start
    after = ticks[0]
    stop.set()
    thread.join()
    print(f"forward alone {alone * 1000:.0f} ms, with the counting thread {during * 1000:.0f} ms; "
          f"{after - before} ticks during it")
    # Holding the GIL for the whole call would leave the counter where it was
    # (at most a tick or two at the switch before the call).
    assert after - before > 1000


LOOP = """
import quanta
model = quanta.nn.Sequential(quanta.nn.Linear(256, 256, seed=0), quanta.nn.ReLU(), quanta.nn.Linear(256, 10, seed=1))
opt = quanta.optim.SGD(model.parameters(), lr=0.01)
x, y = quanta.randn(512, 256), quanta.zeros(512, dtype=quanta.i64)
print("started", flush=True)
for step in range(100000):
    loss = quanta.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("finished", flush=True)
"""


def test_ctrl_c_interrupts_a_training_loop():
    child = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert child.stdout.readline().strip() == "started"
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    start = time.perf_counter()
    out, err = child.communicate(timeout=30)
    assert "KeyboardInterrupt" in err and "finished" not in out
    assert time.perf_counter() - start < 5
