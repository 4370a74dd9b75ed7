// expect: circle 3.14 square 4.00
#include <cstdio>
#include <memory>
#include <vector>
struct Shape { virtual ~Shape() = default; virtual double area() const = 0; virtual const char *name() const = 0; };
struct Circle : Shape { double area() const override { return 3.14159; } const char *name() const override { return "circle"; } };
struct Square : Shape { double area() const override { return 4.0; } const char *name() const override { return "square"; } };
int main() {
  std::vector<std::unique_ptr<Shape>> shapes;
  shapes.push_back(std::make_unique<Circle>());
  shapes.push_back(std::make_unique<Square>());
  for (size_t i = 0; i < shapes.size(); i++) std::printf(i ? " %s %.2f" : "%s %.2f", shapes[i]->name(), shapes[i]->area());
  std::printf("\n");
}
