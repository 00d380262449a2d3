#!/usr/bin/env node
// clock: a plugin program for plugin-host, in Node.js with nothing but its standard library.
//
// It speaks the pluglet process protocol (host/src/process/PROTOCOL.md): length-prefixed frames
// of a JSON header and a raw body, on the socket whose descriptor is in PLUGLET_PLUGIN_FD.
//
//   GET  /clock           {"now": "<ISO time>", "zone": "<configured zone>"}
//   POST /clock/reverse   the request body, reversed byte by byte
//
// Configuration: {"zone": "UTC"} (optional).
'use strict';
const net = require('net');

const FD_VARIABLE = 'PLUGLET_PLUGIN_FD';

if (!(FD_VARIABLE in process.env)) {
  console.error('this is a plugin for plugin-host: it is started by plugin-host serve, not by hand');
  process.exit(2);
}

const socket = new net.Socket({ fd: Number(process.env[FD_VARIABLE]), readable: true, writable: true });

function send(header, body = Buffer.alloc(0)) {
  const encoded = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(4 + encoded.length + body.length, 0);
  prefix.writeUInt32BE(encoded.length, 4);
  socket.write(Buffer.concat([prefix, encoded, body]));
}

let zone = 'UTC';

function answer(call, body) {
  if (call.route === 0) {
    const now = JSON.stringify({ now: new Date().toISOString(), zone });
    return [200, [['content-type', 'application/json']], Buffer.from(now)];
  }
  if (call.route === 1) {
    return [200, [], Buffer.from(body).reverse()];
  }
  throw new Error(`no route ${call.route}`);
}

function handle(header, body) {
  switch (header.type) {
    case 'hello': {
      const config = header.config || {};
      if (config.zone !== undefined && typeof config.zone !== 'string') {
        send({ type: 'refuse', error: 'invalid configuration at `zone`: expected text' });
        socket.end();
        return;
      }
      zone = config.zone || zone;
      send({
        type: 'welcome', version: 1, name: 'clock', plugin_version: '1.0.0',
        routes: [{ method: 'GET', path: '/clock' }, { method: 'POST', path: '/clock/reverse' }],
      });
      break;
    }
    case 'start':
    case 'stop':
      send({ type: 'result', id: header.id, ok: true });
      break;
    case 'ping':
      send({ type: 'pong', id: header.id });
      break;
    case 'call':
      try {
        const [status, headers, reply] = answer(header, body);
        send({ type: 'response', id: header.id, status, headers }, reply);
      } catch (error) {
        send({ type: 'response', id: header.id, error: String(error) });
      }
      break;
    default: // later versions may send more; ignore what is unknown
  }
}

// Frames arrive in pieces or several at once: keep what has come until a frame is whole.
let pending = Buffer.alloc(0);
socket.on('data', (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  while (pending.length >= 8) {
    const size = pending.readUInt32BE(0);
    if (pending.length < 4 + size) break;
    const headerSize = pending.readUInt32BE(4);
    const header = JSON.parse(pending.subarray(8, 8 + headerSize).toString('utf8'));
    const body = pending.subarray(8 + headerSize, 4 + size);
    pending = pending.subarray(4 + size);
    handle(header, body);
  }
});
socket.on('end', () => process.exit(0));
socket.on('error', () => process.exit(1));
