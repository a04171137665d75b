#!/usr/bin/env python3
"""Memory and time to ready of file-gateway with the peer benchmark's route shape.

    benches/memory/memory.py BINARY [--routes 10,10000,20000] [--cycles 3] [--settle 10]

For each route count: starts BINARY on a fresh directory holding that many HTTPRoutes (the
configuration `benches/peers/peers.py` drives), times /readyz and reads VmRSS `--settle`
seconds after its status is published. Then the give-back cycle: a fresh start with the smallest count, then
`--cycles` times the largest count written over the watched file and the smallest written back,
reading VmRSS once each change is published. Prints one line per measurement and, at the end,
RSS per route and the ratio of the cycle's final RSS to the fresh start's (the target is 2x).
Binds 127.0.0.1:19901 (admin) and 18480 (listener); nothing else is needed.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'peers'))
import peers  # noqa: E402

ADMIN = '127.0.0.1:19901'
PUBLISHED = 'configuration status published'


def rss_mb(pid):
    with open(f'/proc/{pid}/status') as f:
        return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1)) / 1024


class Gateway:
    """A running file-gateway whose log lines are counted as they come."""

    def __init__(self, binary, conf):
        cmd = [binary, '--config', conf, '--controller-name', 'example.net/bench',
               '--listener-port-map', '80=18480', '--admin', ADMIN]
        env = dict(os.environ, RUST_LOG='info', NO_COLOR='1')
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True, errors='replace')
        self.published = 0
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            line = re.sub(r'\x1b\[[0-9;]*m', '', line)
            with self.cond:
                self.lines.append(line)
                if PUBLISHED in line:
                    self.published += 1
                    self.cond.notify_all()

    def ready(self, timeout=120):
        while time.time() - self.started < timeout:
            try:
                with urllib.request.urlopen(f'http://{ADMIN}/readyz', timeout=1) as r:
                    if r.status == 200:
                        return time.time() - self.started
            except Exception:
                pass
            time.sleep(0.005)
        raise SystemExit('file-gateway did not get ready')

    def wait_published(self, count, timeout=300):
        with self.cond:
            if not self.cond.wait_for(lambda: self.published >= count, timeout):
                raise SystemExit('the configuration change was not published')

    def timings(self):
        keys = {}
        for k in ('load_ms', 'translate_ms', 'apply_ms', 'status_ms'):
            found = [m for line in self.lines for m in re.findall(k + r'=([\d.]+)', line)]
            keys[k] = found[:2]
        return keys

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def write_conf(d, n, cache):
    """Writes the configuration of `n` routes to `d`/gw/all.yaml (replacing it in one rename)."""
    if n not in cache:
        src = tempfile.mkdtemp(prefix=f'gw-mem-{n}-')
        peers.gateway_conf(src, n, [], 'x')
        cache[n] = os.path.join(src, 'gw', 'all.yaml')
    os.makedirs(os.path.join(d, 'gw'), exist_ok=True)
    tmp = os.path.join(d, 'gw', '.all.yaml.tmp')
    shutil.copyfile(cache[n], tmp)
    os.rename(tmp, os.path.join(d, 'gw', 'all.yaml'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('binary')
    ap.add_argument('--routes', default='10,10000,20000')
    ap.add_argument('--cycles', type=int, default=3)
    ap.add_argument('--settle', type=float, default=10.0,
                    help='seconds between ready (or a published change) and reading RSS')
    args = ap.parse_args()
    counts = [int(n) for n in args.routes.split(',')]
    cache = {}
    fresh = {}
    for n in counts:
        d = tempfile.mkdtemp(prefix='gw-mem-run-')
        write_conf(d, n, cache)
        gw = Gateway(args.binary, d)
        try:
            ready = gw.ready()
            gw.wait_published(1)
            time.sleep(args.settle)
            fresh[n] = rss_mb(gw.proc.pid)
            print(f'routes={n} ready_s={ready:.3f} rss_mb={fresh[n]:.1f} {gw.timings()}',
                  flush=True)
        finally:
            gw.stop()
            shutil.rmtree(d)
    small, large = min(counts), max(counts)
    if args.cycles:
        d = tempfile.mkdtemp(prefix='gw-mem-cycle-')
        write_conf(d, small, cache)
        gw = Gateway(args.binary, d)
        try:
            gw.ready()
            gw.wait_published(1)
            time.sleep(args.settle)
            start = rss_mb(gw.proc.pid)
            print(f'cycle start routes={small} rss_mb={start:.1f}', flush=True)
            published = 1
            for cycle in range(1, args.cycles + 1):
                for n in (large, small):
                    write_conf(d, n, cache)
                    published += 1
                    gw.wait_published(published)
                    time.sleep(args.settle)
                    print(f'cycle {cycle} routes={n} rss_mb={rss_mb(gw.proc.pid):.1f}',
                          flush=True)
            end = rss_mb(gw.proc.pid)
        finally:
            gw.stop()
            shutil.rmtree(d)
        print(f'give-back: end {end:.1f} MB / fresh start {start:.1f} MB = {end / start:.2f}x '
              f'(target <= 2x)')
    for n in counts:
        if n != small:
            per = (fresh[n] - fresh[small]) * 1024 * 1024 / (n - small)
            print(f'routes={n}: {per / 1024:.2f} KiB RSS per route above {small} routes '
                  f'(target <= 3 KiB; total {fresh[n]:.1f} MB, target < 45 MB at 10,000)')
    for src in cache.values():
        shutil.rmtree(os.path.dirname(os.path.dirname(src)), ignore_errors=True)


if __name__ == '__main__':
    main()
