#!/usr/bin/env node
// Test OTLP/HTTP trace receiver for tests/e2e/test_tracing.sh: POST /v1/traces, protobuf
// (application/x-protobuf) or OTLP/JSON (application/json). Every request is decoded with the
// OpenTelemetry protocol definitions (opentelemetry-proto, as compiled by protobufjs into
// @opentelemetry/otlp-transformer), never with our own reading of the format: JSON is checked
// strictly (ids in hex of the right length, every key a field of the message it sits in). Writes
// one JSON line per request and per span to OUT; a request that does not decode gets 400 and an
// "error" line.
//   node receiver.js PORT OUT
'use strict';
const fs = require('fs');
const http = require('http');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root');

const Req = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
const [port, outPath] = process.argv.slice(2);
const out = fs.openSync(outPath, 'a');
const emit = (o) => fs.writeSync(out, JSON.stringify(o) + '\n');

const hex = (b) => Buffer.from(b || []).toString('hex');
function anyValue(v) {
  if (v.stringValue !== undefined && v.stringValue !== null) return v.stringValue;
  if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue;
  if (v.intValue !== undefined && v.intValue !== null) return Number(v.intValue);
  if (v.doubleValue !== undefined && v.doubleValue !== null) return v.doubleValue;
  return null;
}
const attrs = (list) => Object.fromEntries((list || []).map((kv) => [kv.key, anyValue(kv.value || {})]));

// OTLP/JSON -> a message protobufjs accepts: ids from hex (the OTLP JSON mapping) to bytes.
// Throws on a malformed id.
function idsFromHex(o, path) {
  if (Array.isArray(o)) return o.map((x, i) => idsFromHex(x, path + '[' + i + ']'));
  if (!o || typeof o !== 'object') return o;
  const r = {};
  for (const [k, v] of Object.entries(o)) {
    const len = { traceId: 32, spanId: 16, parentSpanId: 16 }[k];
    if (len !== undefined) {
      if (typeof v !== 'string' || !new RegExp('^[0-9a-f]{' + len + '}$').test(v))
        throw new Error(path + '.' + k + ': not ' + len + ' lowercase hex digits: ' + v);
      r[k] = Buffer.from(v, 'hex');
    } else {
      r[k] = idsFromHex(v, path + '.' + k);
    }
  }
  return r;
}

// Every key of `sent` must be a field protobufjs knows (present in the round trip with defaults).
function unknownKeys(sent, known, path) {
  if (Array.isArray(sent))
    return sent.flatMap((x, i) => unknownKeys(x, (known || [])[i], path + '[' + i + ']'));
  if (!sent || typeof sent !== 'object' || Buffer.isBuffer(sent)) return [];
  return Object.keys(sent).flatMap((k) =>
    known && typeof known === 'object' && k in known
      ? unknownKeys(sent[k], known[k], path + '.' + k)
      : [path + '.' + k]);
}

function decode(type, body) {
  if (type.startsWith('application/x-protobuf')) return Req.decode(body);
  if (type.startsWith('application/json')) {
    const sent = idsFromHex(JSON.parse(body.toString('utf8')), '$');
    const msg = Req.fromObject(sent);
    const bad = unknownKeys(sent, Req.toObject(msg, { defaults: true, arrays: true }), '$');
    if (bad.length) throw new Error('unknown fields: ' + bad.join(', '));
    return msg;
  }
  throw new Error('unsupported content type ' + type);
}

function record(msg, encoding, bytes) {
  const o = Req.toObject(msg, { longs: String, bytes: Buffer, arrays: true });
  let n = 0;
  for (const rs of o.resourceSpans) {
    for (const ss of rs.scopeSpans) {
      for (const s of ss.spans) {
        n++;
        emit({
          type: 'span', encoding, traceId: hex(s.traceId), spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId), name: s.name, kind: s.kind,
          start: s.startTimeUnixNano, end: s.endTimeUnixNano,
          status: s.status || {}, attributes: attrs(s.attributes),
          resource: attrs((rs.resource || {}).attributes), scope: ss.scope || {},
        });
      }
    }
  }
  emit({ type: 'request', encoding, spans: n, bytes });
}

http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const type = req.headers['content-type'] || '';
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end();
      return;
    }
    try {
      record(decode(type, body), type.includes('json') ? 'json' : 'protobuf', body.length);
    } catch (e) {
      emit({ type: 'error', error: String(e.message || e), contentType: type });
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end(String(e.message || e));
      return;
    }
    const json = type.includes('json');
    res.writeHead(200, { 'Content-Type': json ? 'application/json' : 'application/x-protobuf' });
    res.end(json ? '{}' : Buffer.alloc(0));
  });
}).listen(Number(port), '127.0.0.1', () => emit({ type: 'listening', port: Number(port) }));
