// A Kiln JavaScript script: `main` gets the parameters object, and what it
// returns (awaited if it is a promise) becomes the execution's `result`.
function main(params) {
  const name = params.name ?? "world";
  console.log(`Hello, ${name}!`);
  return { greeting: `Hello, ${name}!`, length: name.length };
}
