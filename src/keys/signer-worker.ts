import { type KeyObject, sign } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { signatureOptions } from '../lib/jws.ts';

// Worker side of SignerPool: holds the private keys it was sent and signs each batch synchronously (no per-call
// WebCrypto or thread-pool overhead), answering the whole batch in one message.
const keys = new Map<string, { alg: string; key: KeyObject }>();

type Message =
  | { op: 'key'; kid: string; alg: string; key: KeyObject }
  | { op: 'forget'; kid: string }
  | { op: 'sign'; batch: number; kid: string; inputs: string[] };

parentPort?.on('message', (m: Message) => {
  if (m.op === 'key') {
    keys.set(m.kid, { alg: m.alg, key: m.key });
    return;
  }
  if (m.op === 'forget') {
    keys.delete(m.kid);
    return;
  }
  const k = keys.get(m.kid);
  if (!k) {
    parentPort?.postMessage({ batch: m.batch, sigs: null });
    return;
  }
  const o = signatureOptions(k.alg);
  const opts = { key: k.key, ...o.options };
  const sigs = m.inputs.map((input) => sign(o.digest, Buffer.from(input), opts).toString('base64url'));
  parentPort?.postMessage({ batch: m.batch, sigs });
});
