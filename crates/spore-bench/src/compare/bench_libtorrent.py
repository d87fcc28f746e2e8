# libtorrent 1 -> 1 on loopback, for `spore-bench compare`.
# usage: python bench_libtorrent.py FILE WORKDIR ; prints "seconds <float>" once the
# leecher has the whole file (every piece hash-checked) on disk.
import os, sys, time
import libtorrent as lt

path, work = os.path.abspath(sys.argv[1]), sys.argv[2]
fs = lt.file_storage()
lt.add_files(fs, path)
t = lt.create_torrent(fs, piece_size=4 * 1024 * 1024)
lt.set_piece_hashes(t, os.path.dirname(path))
info = lt.torrent_info(t.generate())

def session(ip, port):
    return lt.session({
        "listen_interfaces": f"{ip}:{port}",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })

seed = session("127.0.0.2", 6891)
leech = session("127.0.0.3", 6892)
s = seed.add_torrent({"ti": info, "save_path": os.path.dirname(path)})
dest = os.path.join(work, "libtorrent-dl")
os.makedirs(dest, exist_ok=True)
l = leech.add_torrent({"ti": lt.torrent_info(info), "save_path": dest})
while not s.status().is_seeding:
    time.sleep(0.01)
started = time.time()
l.connect_peer(("127.0.0.2", 6891))
deadline = started + 600
while not l.status().is_seeding:
    if time.time() > deadline:
        sys.exit("libtorrent: timed out")
    time.sleep(0.005)
    if os.environ.get("LT_DEBUG"): print(round(time.time()-started,2), l.status().total_done, l.status().num_peers, file=sys.stderr)
elapsed = time.time() - started
l.flush_cache() if hasattr(l, "flush_cache") else None
print(f"seconds {elapsed:.4f}", flush=True)
