// The benchmark's clients (benchmarks/api/run.py runs this): autocannon's closed-loop connections,
// each sending its next request as soon as the previous answer is read, for a fixed time.
//
//   node drive.js '{"url": "http://127.0.0.1:8080", "seconds": 30, "paths": ["/health"], "keys": [null, ...]}'
//
// One connection per entry of "keys" (a key is sent as "Authorization: Bearer"; null sends none), each
// going over "paths" in turn from its own offset, so every path sees the same share. Prints one JSON
// line: each answer's latency in microseconds, in the order read, the answers by status, the
// connection errors and timeouts, and the CPU this process took (it shares the cores with the server).
// Every latency is kept, not autocannon's histogram (whole milliseconds, 2xx only), so the percentiles
// are computed in Python the same way for every phase.
'use strict'

const autocannon = require('autocannon')

const spec = JSON.parse(process.argv[2])
const latencies = []
const statuses = {}
let next = 0

function setupClient (client) {
  const i = next++
  const key = spec.keys[i % spec.keys.length]
  const headers = key ? { authorization: `Bearer ${key}` } : {}
  const offset = i % spec.paths.length
  const paths = [...spec.paths.slice(offset), ...spec.paths.slice(0, offset)]
  client.setRequests(paths.map((path) => ({ method: 'GET', path, headers })))
}

const cpu = process.cpuUsage()
const instance = autocannon(
  {
    url: spec.url,
    connections: spec.keys.length,
    duration: spec.seconds,
    pipelining: 1,
    timeout: 30,
    setupClient
  },
  (error, result) => {
    if (error) throw error
    const used = process.cpuUsage(cpu)
    process.stdout.write(
      JSON.stringify({
        latencies_us: latencies,
        statuses,
        errors: result.errors,
        timeouts: result.timeouts,
        seconds: result.duration,
        cpu_seconds: (used.user + used.system) / 1e6
      }) + '\n'
    )
  }
)
instance.on('response', (client, statusCode, bytes, responseTime) => {
  latencies.push(Math.round(responseTime * 1000))
  statuses[statusCode] = (statuses[statusCode] || 0) + 1
})
