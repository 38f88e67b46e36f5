// kinesalite bound to 127.0.0.1 only (its own CLI binds every interface); in-memory store.
const kinesalite = require(process.env.KINESALITE_MODULE)
const port = parseInt(process.argv[2], 10)
const server = kinesalite({ createStreamMs: 20, deleteStreamMs: 20, updateStreamMs: 20, shardLimit: 100 })
server.listen(port, '127.0.0.1', () => console.log('kinesalite listening on 127.0.0.1:' + port))
