// A new faaso function. Edit the handler; the tests in function.yml run against it.
//
// event: method, path, query (first value of each parameter), queryAll (URLSearchParams:
// event.queryAll.getAll("n")), headers (lower-case names), body (a Buffer); context.hostname.
// Return a string (text/plain), a Buffer, an object/array/number (JSON), null (empty 200), or
// {statusCode: 201, headers: {...}, body: ...} to choose the status and headers.
"use strict";

module.exports = async (event, context) => {
  if (event.method === "POST") {
    return event.body; // echo the request body back
  }
  const name = event.query.name || "world";
  return `hello ${name}`;
};
