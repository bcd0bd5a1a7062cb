version 1.0

# upper-case, de-duplicate and count the lines of a text file: the demo's CWL workflow in WDL
import "tasks.wdl" as tasks

workflow textkit {
  input {
    File text
  }
  call tasks.upper { input: src = text }
  call tasks.unique { input: src = upper.out }
  call tasks.count { input: src = unique.out }
  output {
    File sorted_lines = unique.out
    File line_count = count.out
  }
}
