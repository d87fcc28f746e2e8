# libtorrent 1 -> 1 on loopback, for `spore-bench compare`.
# usage: python bench_libtorrent.py FILE WORKDIR ; prints "seconds <float>" once the
# leecher has the whole file (every piece hash-checked and written) on disk.
#
# Settings, and why (measured on this machine, see docs/benchmarks.md):
# - TCP only. libtorrent dials uTP first by default, and uTP's delay-based
#   congestion control on loopback moved 200 MiB in 11-19 s in bursts of a few
#   MB; over TCP the same run takes about 2 s.
# - libtorrent's own `high_performance_seed()` preset on both sessions (deeper
#   request queues, larger send buffers and watermarks, no unchoke limit,
#   prefer TCP in mixed mode); it used a little less CPU than the defaults.
# - 1 MiB pieces: 4 and 16 MiB pieces were clearly slower for 1 GiB (the
#   leecher verifies and the picker works per piece), and spore uses ~1 MiB.
# - The seed checks its copy before the clock starts (no `seed_mode`, which
#   would hash each piece lazily during the transfer).
# - Completion is libtorrent's `torrent_finished_alert` (every piece has passed
#   its SHA-1 check after being written), awaited with `wait_for_alert`, not by
#   polling the torrent's status.
import os, sys, time
import libtorrent as lt

PIECE_SIZE = 1 << 20
TIMEOUT_SECS = 600

path, work = os.path.abspath(sys.argv[1]), sys.argv[2]
fs = lt.file_storage()
lt.add_files(fs, path)
t = lt.create_torrent(fs, piece_size=PIECE_SIZE)
lt.set_piece_hashes(t, os.path.dirname(path))
info = lt.torrent_info(t.generate())


def session(ip, port):
    settings = dict(lt.high_performance_seed())
    settings.update({
        "listen_interfaces": f"{ip}:{port}",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        # both peers are on 127.x; libtorrent refuses a second connection per IP otherwise
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "upload_rate_limit": 0, "download_rate_limit": 0,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })
    return lt.session(settings)


seed = session("127.0.0.2", 6891)
leech = session("127.0.0.3", 6892)
s = seed.add_torrent({"ti": info, "save_path": os.path.dirname(path)})
dest = os.path.join(work, "libtorrent-dl")
os.makedirs(dest, exist_ok=True)
l = leech.add_torrent({"ti": lt.torrent_info(info), "save_path": dest})
ready_deadline = time.time() + TIMEOUT_SECS
while not s.status().is_seeding:
    if time.time() > ready_deadline:
        sys.exit("libtorrent: the seed never finished checking its copy")
    time.sleep(0.01)
leech.pop_alerts()  # whatever the leecher said before the clock starts

started = time.time()
l.connect_peer(("127.0.0.2", 6891))
deadline = started + TIMEOUT_SECS
finished = None
while finished is None:
    if time.time() > deadline:
        sys.exit("libtorrent: timed out")
    leech.wait_for_alert(100)
    for a in leech.pop_alerts():
        if isinstance(a, lt.torrent_finished_alert):
            finished = time.time()
        elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
            sys.exit(f"libtorrent: {a.message()}")
print(f"seconds {finished - started:.4f}", flush=True)
