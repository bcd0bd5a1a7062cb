cwlVersion: v1.2
class: Workflow
label: upper-case, de-duplicate and count the lines of a text file
inputs:
  text: File
outputs:
  sorted_lines: {type: File, outputSource: sort/out}
  line_count: {type: File, outputSource: count/out}
steps:
  upper:
    run: upper.cwl
    in: {src: text}
    out: [out]
  sort:
    run: sort.cwl
    in: {src: upper/out}
    out: [out]
  count:
    run: count.cwl
    in: {src: sort/out}
    out: [out]
