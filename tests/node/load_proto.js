// Loads every omnistock .proto with @grpc/proto-loader, as a Node client would, and prints the
// fully qualified name of each service and its methods. Exits non-zero if anything fails to load.
//
//   node load_proto.js [PROTO_ROOT]   (default: ../../proto)
'use strict';

const fs = require('fs');
const path = require('path');
const protoLoader = require('@grpc/proto-loader');
const grpc = require('@grpc/grpc-js');

const protoRoot = path.resolve(process.argv[2] || path.join(__dirname, '..', '..', 'proto'));
const packageDir = path.join(protoRoot, 'omnistock', 'v1');
const files = fs
  .readdirSync(packageDir)
  .filter((name) => name.endsWith('.proto'))
  .sort()
  .map((name) => `omnistock/v1/${name}`);

const definition = protoLoader.loadSync(files, {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
// Building client constructors checks that every method's types resolve.
grpc.loadPackageDefinition(definition);

const services = Object.keys(definition)
  .filter((name) => typeof definition[name] === 'object' && !('format' in definition[name]))
  .sort();
if (services.length === 0) {
  console.error('no services found in', files.join(', '));
  process.exit(1);
}
console.log(`loaded ${files.length} files from ${protoRoot}`);
for (const name of services) {
  const methods = Object.values(definition[name]).map((method) => {
    const kind =
      (method.requestStream ? 'stream ' : '') + method.requestType.type.name + ' -> ' +
      (method.responseStream ? 'stream ' : '') + method.responseType.type.name;
    return `  ${method.path.split('/').pop()}(${kind})`;
  });
  console.log(`service ${name}`);
  console.log(methods.join('\n'));
}
