// Lists the services of a running omnistock server through gRPC server reflection, the way
// grpcurl or a client in any language discovers the API, and fetches each omnistock service's
// file descriptors to show they resolve. Prints one service name per line.
//
//   node reflect.js HOST:PORT            (plaintext; the server binds loopback when auth is off)
//   OMNISTOCK_TOKEN=... node reflect.js HOST:PORT    (sends "authorization: Bearer ...")
//
// Exits 1 on any error, or if the server lists no omnistock.v1 service.
'use strict';

const path = require('path');
const protoLoader = require('@grpc/proto-loader');
const grpc = require('@grpc/grpc-js');

const TIMEOUT_MS = 10000;
const address = process.argv[2];
if (!address) {
  console.error('usage: node reflect.js HOST:PORT');
  process.exit(2);
}

const definition = protoLoader.loadSync(path.join(__dirname, 'reflection.proto'), {
  keepCase: true,
  longs: String,
  defaults: true,
  oneofs: true,
});
const reflection = grpc.loadPackageDefinition(definition).grpc.reflection.v1alpha;
const client = new reflection.ServerReflection(address, grpc.credentials.createInsecure());

const metadata = new grpc.Metadata();
if (process.env.OMNISTOCK_TOKEN) {
  metadata.set('authorization', `Bearer ${process.env.OMNISTOCK_TOKEN}`);
}

function fail(message) {
  console.error(`reflect.js: ${message}`);
  process.exit(1);
}

const call = client.ServerReflectionInfo(metadata, { deadline: Date.now() + TIMEOUT_MS });
let services = null;
let pending = 0;
call.on('data', (response) => {
  if (response.message_response === 'error_response') {
    const error = response.error_response;
    fail(`server reflection error ${error.error_code}: ${error.error_message}`);
  }
  if (response.message_response === 'list_services_response') {
    services = response.list_services_response.service.map((service) => service.name).sort();
    const own = services.filter((name) => name.startsWith('omnistock.v1.'));
    if (own.length === 0) fail(`no omnistock.v1 services in: ${services.join(', ')}`);
    pending = own.length;
    for (const name of own) call.write({ file_containing_symbol: name });
    return;
  }
  if (response.message_response === 'file_descriptor_response') {
    if (response.file_descriptor_response.file_descriptor_proto.length === 0) {
      fail(`no descriptor for ${response.original_request.file_containing_symbol}`);
    }
    pending -= 1;
    if (pending === 0) call.end();
  }
});
call.on('error', (error) => fail(`${address}: ${error.code} ${error.details || error.message}`));
call.on('end', () => {
  if (services === null) fail('stream ended without a list_services response');
  for (const name of services) console.log(name);
  client.close();
});
call.write({ list_services: '*' });
