// Browser stand-in for the `form-data` package: the browser's own FormData (what
// that package's browser build exports too).
export default globalThis.FormData;
