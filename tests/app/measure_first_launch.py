"""First launch from a fresh clone, in Chromium: seconds to the first page and to the Overview metrics.

Not a test (a measurement, minutes long): `python tests/app/measure_first_launch.py` prints one JSON line;
the README quotes tests/app/first_launch.json."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

src = str(__import__("pathlib").Path(__file__).resolve().parents[2])
dst = "/tmp/cotrr-first-launch/clone"
shutil.rmtree(dst, ignore_errors=True)
os.makedirs(os.path.dirname(dst), exist_ok=True)
subprocess.run(["git", "clone", "-q", src, dst], check=True)
commit = subprocess.run(["git", "-C", dst, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
env = {k: v for k, v in os.environ.items() if not k.startswith("COTRR_")}
port = 8611
t0 = time.time()
load0 = os.getloadavg()
proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                         "--server.headless", "true"], cwd=dst, env=env, stdout=open("/tmp/cotrr-first-launch/server.log", "wb"),
                        stderr=subprocess.STDOUT, start_new_session=True)
out = {"commit": commit, "cpus": os.cpu_count(), "load_avg_at_start": load0}
try:
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.2)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        pg = b.new_page()
        pg.goto(f"http://127.0.0.1:{port}/")
        pg.get_by_text("First launch", exact=False).first.wait_for(timeout=120_000)
        out["first_page_s"] = round(time.time() - t0, 1)
        pg.get_by_text("Test metrics: reranked vs original order").first.wait_for(timeout=1_500_000)
        out["metrics_shown_s"] = round(time.time() - t0, 1)
        pg.get_by_text("Serving latency p50 / p95").first.wait_for(timeout=300_000)
        out["latency_shown_s"] = round(time.time() - t0, 1)
        b.close()
    out["load_avg_at_end"] = os.getloadavg()
    runs = [d for d in os.listdir(f"{dst}/artifacts/runs") if d.endswith("default-fast")]
    m = json.load(open(f"{dst}/artifacts/runs/{runs[0]}/metrics.json"))
    out["test_ndcg@10"] = round(m["test"]["cotrr"]["ndcg@10"], 4)
    out["original_ndcg@10"] = round(m["test"]["original"]["ndcg@10"], 4)
    out["train_seconds"] = round(m["train_seconds"], 1)
finally:
    os.killpg(proc.pid, signal.SIGTERM)
print(json.dumps(out))
