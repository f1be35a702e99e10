// One cell of the decisions CSV. A spreadsheet runs a cell that starts with = + - @ tab or CR as a
// formula (CSV injection), so such a cell gets one leading ' (the OWASP rule); so does a cell that starts
// with quotes and then one of those, which lets the import take exactly one ' off and get every value back
// (sp_assets/review/spreadsheet.py is the same rule in Python).
function reviewCsvCell(v) {
  "use strict";
  v = v == null ? "" : String(v);
  if (/^'*[=+\-@\t\r]/.test(v)) v = "'" + v;
  return /[",\r\n]|^\s|\s$/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
}
// The page has no `module`; under node (tests/test_review_hostile.py) the function is exported.
if (typeof module === "object" && module.exports) module.exports = reviewCsvCell;
