// Browser stand-in for the `base64-js` package (CommonJS, which a browser cannot
// import): the SDK only uses fromByteArray.
export function fromByteArray(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function toByteArray(b64) {
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

export default { fromByteArray, toByteArray };
